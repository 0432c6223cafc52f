"""charlstm-serve: one model over HTTP, OpenAI-compatible, with every request's lanes stepped as one batch."""
