"""``python -m project.networks --network NAME --output DIR``: a project network as a hub module with fresh variables."""

import sys

from library.hub import write_module

if __name__ == "__main__":
    sys.exit(write_module.main(sys.argv[1:], networks_package="project.networks", prog="python -m project.networks"))
