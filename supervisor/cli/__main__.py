from supervisor.cli.commands import main

main()
