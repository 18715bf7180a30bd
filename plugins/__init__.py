"""mmat's built-in plugins (installed as the package ``mmat_plugins``).

One sub-package per family. Each registers its components through the ``mmat`` entry-point group
declared in mmat's pyproject, exactly as a third-party plugin does, and could move to its own
distribution without a code change.
"""
