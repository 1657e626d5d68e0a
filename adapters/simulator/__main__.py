from adapters.simulator.server import main

main()
