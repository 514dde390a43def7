"""callbridge: Asterisk / FreePBX ↔ Bitrix24 CRM connector."""

__version__ = "0.1.0"
