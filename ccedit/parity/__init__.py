"""Parity of ccedit with the original implementation's reference fixtures (network and sampling)."""
