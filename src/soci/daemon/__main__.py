from soci.daemon.main import main

main()
