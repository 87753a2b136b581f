"""Validate .ipynb files against the nbformat 4 JSON schema with the `nbformat` package
(the library Jupyter itself reads notebooks with). Exit code 0 only if every file is valid.

    python validate_ipynb.py a.ipynb b.ipynb
"""

import sys

import nbformat

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    if nb.nbformat != 4:
        sys.exit(f"{path}: nbformat {nb.nbformat}, not 4")
    nbformat.validate(nb)
    print(f"ok {path}: nbformat {nb.nbformat}.{nb.nbformat_minor}, {len(nb.cells)} cells")
