"""AMI wire protocol: framing (pure) and the asyncio client."""

from callbridge.pbx.ami.framing import AmiFramer, AmiMessage, encode_action, unescape

__all__ = ["AmiFramer", "AmiMessage", "encode_action", "unescape"]
