from fmashard.cli import main

main()
