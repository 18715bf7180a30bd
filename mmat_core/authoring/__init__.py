"""Building blocks for plugin authors that are more than a base class: :mod:`.sources` (a source
from a record reader and a normaliser, image resolution, row helpers) and :mod:`.formatters` (a
formatter from one record function, with the train/val split and the forged-tag check).

The built-in plugins are written with them. Their main names are importable from
:mod:`mmat_core` itself; the modules hold the smaller helpers too.
"""
