"""moto's server, applying one request at a time.

moto's backends take no locks, so two concurrent conditional writes can both pass their
condition (seen here: 2 of 8 concurrent `attribute_not_exists` puts succeeded). DynamoDB applies
each write atomically; serialising request handling gives the local endpoint the same guarantee.
Connections are still accepted by werkzeug's threaded server. Arguments are moto_server's.
"""

import sys
import threading

import moto.server as server

_lock = threading.Lock()
_handle = server.DomainDispatcherApplication.__call__


def _one_at_a_time(self, environ, start_response):
    with _lock:
        return _handle(self, environ, start_response)


server.DomainDispatcherApplication.__call__ = _one_at_a_time

if __name__ == "__main__":
    server.main(sys.argv[1:])
