from qosd.cli import main

main()
