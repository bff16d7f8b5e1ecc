"""The POS and catalogue simulator."""
