"""``qbert-user-dir``: print the path to pass as ``fairseq-train --user-dir``.

fairseq imports a user dir from a filesystem path. From the repo root that is simply
``fairseq_qbert``; after ``pip install`` use ``--user-dir "$(qbert-user-dir)"`` from anywhere.
"""
import os


def user_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def cli_main():
    print(user_dir())


if __name__ == "__main__":
    cli_main()
