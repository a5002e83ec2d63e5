"""Integrations with other frameworks; each is imported on its own (``ragrec.integrations.langchain``
needs the ``langchain`` extra)."""
