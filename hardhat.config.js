// Hardhat compiles offline: the machine has no route to the solc download
// mirror, so the compiler is the WebAssembly build shipped in the npm `solc`
// package (pinned in package.json). Optimizer settings were chosen by the gas
// table in bench/results/gas.json (see docs/gas.md).
const path = require("path");
const { subtask } = require("hardhat/config");
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require("hardhat/builtin-tasks/task-names");

const SOLC_VERSION = require("solc/package.json").version;

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) {
    throw new Error(
      `hardhat.config.js pins solc ${SOLC_VERSION} (npm package); config asked for ${args.solcVersion}`
    );
  }
  return {
    compilerPath: require.resolve("solc/soljson.js"),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion: require("solc").version(),
  };
});

/** @type import('hardhat/config').HardhatUserConfig */
module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: {
      // py-evm (the embedded chain) supports up to Cancun; solc 0.8.37 defaults to osaka.
      evmVersion: "cancun",
      viaIR: true,
      optimizer: { enabled: true, runs: 1000000 },
      metadata: { bytecodeHash: "none" },
    },
  },
  paths: {
    sources: "./contracts",
    artifacts: "./.hardhat/artifacts",
    cache: "./.hardhat/cache",
  },
};

// `npx hardhat export-build [--out dir]` writes the JSON that Python loads (so running needs no Node):
// ABI, bytecode, compiler version and settings, and a hash of every source that went into the build.
// tests/contracts/test_build.py re-runs it into a temp dir and fails if anything differs.
const { task } = require("hardhat/config");
const EXPORTED = {
  "contracts/src/CardlessEscrow.sol:CardlessEscrow": "CardlessEscrow.json",
  "contracts/test-helpers/MockERC20.sol:MockERC20": "test-helpers/MockERC20.json",
  "contracts/test-helpers/NoReturnToken.sol:NoReturnToken": "test-helpers/NoReturnToken.json",
  "contracts/test-helpers/FeeOnTransferToken.sol:FeeOnTransferToken": "test-helpers/FeeOnTransferToken.json",
  "contracts/test-helpers/BlacklistToken.sol:BlacklistToken": "test-helpers/BlacklistToken.json",
  "contracts/test-helpers/ReentrantToken.sol:ReentrantToken": "test-helpers/ReentrantToken.json",
  "contracts/test-helpers/RevertingReceiver.sol:RevertingReceiver": "test-helpers/RevertingReceiver.json",
  "contracts/test-helpers/ERC1271Signer.sol:ERC1271Signer": "test-helpers/ERC1271Signer.json",
  "contracts/test-helpers/AcceptAnySignature.sol:AcceptAnySignature": "test-helpers/AcceptAnySignature.json",
  "contracts/test-helpers/ForceSend.sol:ForceSend": "test-helpers/ForceSend.json",
};

task("export-build", "Write contracts/build/*.json from a fresh compile")
  .addOptionalParam("out", "output directory", "contracts/build")
  .setAction(async ({ out }, hre) => {
    const fs = require("fs");
    const crypto = require("crypto");
    await hre.run("compile", { quiet: true });
    for (const [fqn, file] of Object.entries(EXPORTED)) {
      const artifact = await hre.artifacts.readArtifact(fqn);
      const buildInfo = await hre.artifacts.getBuildInfo(fqn);
      // Hash exactly the sources this contract was built from (its metadata lists them with their
      // keccak256), not the whole compilation job: Hardhat groups files differently in a clean and an
      // incremental compile, and the hash must not depend on that.
      const metadata = JSON.parse(buildInfo.output.contracts[artifact.sourceName][artifact.contractName].metadata);
      const sourceHash = crypto.createHash("sha256");
      for (const name of Object.keys(metadata.sources).sort()) {
        sourceHash.update(name).update("\0").update(metadata.sources[name].keccak256).update("\0");
      }
      const doc = {
        contractName: artifact.contractName,
        sourceName: artifact.sourceName,
        compiler: { version: buildInfo.solcLongVersion, settings: buildInfo.input.settings },
        sourceHash: "sha256:" + sourceHash.digest("hex"),
        abi: artifact.abi,
        bytecode: artifact.bytecode,
        deployedBytecode: artifact.deployedBytecode,
      };
      const target = path.join(out, file);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.writeFileSync(target, JSON.stringify(doc, null, 2) + "\n");
    }
  });
