"""The contract's cases, one module per rule group; :mod:`..rules` imports them all."""
