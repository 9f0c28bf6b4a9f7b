"""Print a constraints file without the pins of the distributions this interpreter already sees.

    .venv/bin/python scripts/constraints_offline.py requirements/constraints.txt > .venv/tmp/constraints-offline.txt

Used by scripts/setup_env.sh and scripts/install_mm.sh when SSLBENCH_FIND_LINKS points pip at a folder of wheels
instead of an index: no index can bring the pinned version of something the environment already holds (a GPU image's
numpy, scipy, timm, ... seen through --system-site-packages), so those stay as they are and only have to meet the
project's own lower bounds; the pins still hold for everything the folder has to bring.
"""

import importlib.metadata as md
import re
import sys


def installed(name: str) -> bool:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        return False
    return True


def main(path: str) -> None:
    with open(path) as f:
        for line in f:
            name = re.split(r"[=<>!~ ;\[]", line.strip(), maxsplit=1)[0]
            if name and not name.startswith("#") and installed(name):
                continue
            sys.stdout.write(line)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: constraints_offline.py CONSTRAINTS_FILE")
    main(sys.argv[1])
