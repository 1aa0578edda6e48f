"""The gateway process: the call controller wired to FreeSWITCH, the hub and the media."""
