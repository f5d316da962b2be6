"""The `cnnkit` console script: Ctrl-C while cnnkit is still being imported gives one line, not a traceback.

It lives outside the cnnkit package because importing anything inside it first imports the package
itself (numpy, pydantic: the first few tenths of a second of every command).
"""

import sys


def main():
    try:
        from cnnkit.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    return cli_main()
