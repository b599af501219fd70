from tfgrpo.cli import main

main()
