"""Exporting trained SNNs to other tools: NIR (:mod:`.nir`)."""
