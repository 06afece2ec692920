from alertpipe.cli import main

raise SystemExit(main())
