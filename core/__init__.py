"""What every stage shares, standard library only: formats, artifact names, errors, files, corpus rules, CLI kit.

`import charlstm.core` loads no third-party module, so training ranks, the exporter and the
runtime can all depend on it without pulling in each other's libraries.
"""

from charlstm.core.errors import BadInput

__all__ = ["BadInput"]
