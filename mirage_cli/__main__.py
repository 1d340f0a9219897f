from mirage_cli.cli.main import main

main()
