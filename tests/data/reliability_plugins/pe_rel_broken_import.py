"""A plugin that fails while being imported."""

raise ImportError("pe_rel_broken_import needs a library this machine does not have")
