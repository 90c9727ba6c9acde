from dicomgate.cli import main

main()
