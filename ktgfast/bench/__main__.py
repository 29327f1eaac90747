import sys

from .cli import add_arguments, main  # noqa: F401  (add_arguments: for ``ktgfast bench``)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
