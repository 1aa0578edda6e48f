"""FreeSWITCH 1.10.12 simulator for the demo and the tests (never on a real call's path).

Start it in a background thread::

    from esl_bridge.sim import SimConfig, SimulatorThread
    with SimulatorThread(SimConfig(socket_target=("127.0.0.1", 8084))) as sim:
        ...  # inbound ESL on 127.0.0.1:sim.esl_port, password "ClueCon"

or from the command line: ``python -m esl_bridge.sim --esl-port 8021 --socket-target
127.0.0.1:8084``. See extensions.py for the simulated extensions and server.py for what is
(and is not) simulated.
"""

from .channel import Channel, FiredEvent
from .codecs import G722, OPUS, OPUS_STEREO, PCMA, PCMU, Codec
from .extensions import Extension, default_extensions
from .faults import SimulatorCrashed
from .media import AudioSource, UnicastStream
from .phone import PhoneCall
from .server import SimConfig, Simulator
from .session import EslSession
from .thread import PhoneCallHandle, SimulatorThread

__all__ = [
    "G722",
    "OPUS",
    "OPUS_STEREO",
    "PCMA",
    "PCMU",
    "AudioSource",
    "Channel",
    "Codec",
    "EslSession",
    "Extension",
    "FiredEvent",
    "PhoneCall",
    "PhoneCallHandle",
    "SimConfig",
    "Simulator",
    "SimulatorCrashed",
    "SimulatorThread",
    "UnicastStream",
    "default_extensions",
]
