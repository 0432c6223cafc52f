"""`python -m charlstm.train`: charlstm-train, as torchrun runs it (torchrun ... -m charlstm.train CORPUS ...)."""

from charlstm.train.cli import main

main()
