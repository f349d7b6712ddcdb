"""``python -m qbo_connect_cli`` is the same as the ``qbo-connect`` console script."""

from qbo_connect_cli.main import main

if __name__ == "__main__":
    main()
