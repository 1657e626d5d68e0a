// Hardhat config for `make slither` only: the project's config (same solc, settings and offline
// compiler), but compiled from scratch into its own artifacts directory. Slither reads every
// build-info file in the artifacts directory, and the shared .hardhat/artifacts accumulates
// build-infos from incremental compiles whose sources no longer match the files on disk;
// a clean, private build gives it exactly one up-to-date compilation unit.
const base = require("./hardhat.config.js");

module.exports = {
  ...base,
  paths: {
    ...base.paths,
    artifacts: "./.hardhat/slither/artifacts",
    cache: "./.hardhat/slither/cache",
  },
};
