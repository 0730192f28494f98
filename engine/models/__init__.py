"""Model code: shared layers, the decoder-only transformer and the mixture-of-experts FFN."""
