from adapters.simulator.server import main
from cardless.protocol.jsonlimits import restore_recursion_limit

restore_recursion_limit()  # py_ecc (imported through eth_account) set it to 100,000
main()
