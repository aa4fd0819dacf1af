from lfr.cli import main

main()
