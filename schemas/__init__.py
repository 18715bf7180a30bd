"""The JSON Schemas of mmat's records and exports, installed as the package ``mmat_schemas`` so
that ``mmat validate`` finds them in a non-editable install too. The model schemas here are
generated (``mmat schemas --write schemas``); ``exports/`` holds the export layouts."""
