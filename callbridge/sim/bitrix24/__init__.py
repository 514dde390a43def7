"""A Bitrix24 portal emulator over real HTTP, for tests, the demo and people watching.

The portal model (:mod:`.state`) is plain data; the method modules (:mod:`.crm`,
:mod:`.telephony`, :mod:`.oauth`, :mod:`.events`) turn one REST call into a change of that
model; :mod:`.app` is the ASGI edge (auth, limits, faults, envelopes) and :mod:`.server`
runs it under uvicorn. The contract is ``shared/reference/bitrix24-rest.md``.
"""
