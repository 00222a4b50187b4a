from profiler.cli.main import main

main()
