"""Several gateway processes acting as one, coordinated through Redis (``[cluster]``).

Only imported when ``[cluster] redis_url`` is set: a single process never loads redis.

One module per concept, each a thin layer over a few Redis commands:

* ``keys``: the key and channel names, all under one prefix;
* ``nodes``: the member registry and heartbeat (a key per process with a TTL);
* ``presence``: where each web user's session lives (a hash per process, with the same
  TTL) and ``RemotePresence``, this process's in-memory copy of the other processes'
  sessions that the hub reads without waiting;
* ``claims``: acc_rule numbers claimed cluster-wide (``SET NX PX``, refreshed by the
  owner's heartbeat, compare-and-delete release);
* ``bus``: messages between processes over pub/sub (one channel for all, one per member);
* ``node``: ``ClusterNode``, which runs all of it on the gateway's asyncio loop.

Where the awaits are: the hub and the call core never wait on Redis. The hub reads
``RemotePresence`` (memory) and hands outgoing messages to ``ClusterNode``, which queues
them for one writer task. The only await in a call's path is the number claim, made by
the controller before it gives an invitation to the call book.
"""
