"""Model families: one file per family, pure torch."""
