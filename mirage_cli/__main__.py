from mirage_cli.cli import main

main()
