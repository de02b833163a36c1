from volseg.cli.main import main

raise SystemExit(main())
