def preload(parser):
    parser.add_argument("--train-style-home", type=str, default=None,
                        help="Train Style: folder for projects (default: <data dir>/train-style)")
