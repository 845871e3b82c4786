from dubforge.cli import main

main()
