"""The outcome vocabulary of recommendation-request lines: how the world words a failed request.

A request line carries `status <code>` and, when the request failed, an error text in place of the ids. The
world writes these texts (`movielab.world.client`) and a consumer classifies failures by their first words, so
both take them from here:

- `TIMEOUT` "Request timeout to <server> after <ms> ms" (status 0): no whole answer within the time-out;
- `CONNECTION_REFUSED` "Connection refused to <server>" / `CANNOT_CONNECT` "Cannot connect to <server>" (status 0);
- any other status-0 text: the connection broke or the answer was not HTTP;
- "HTTP <status> from <server>": any status but 200;
- `INVALID_RESPONSE` "Invalid response from <server>: <reason>" (status 200): a body that is not a valid answer.

`ERROR_KINDS` names the classes a consumer counts errors by.
"""

from __future__ import annotations

TIMEOUT = "Request timeout to"
CONNECTION_REFUSED = "Connection refused to"
CANNOT_CONNECT = "Cannot connect to"
INVALID_RESPONSE = "Invalid response from"

#: Error classes of a failed request: time-out, no connection, another status-0 failure, invalid body at 200,
#: and `http_<status>` for any other status.
ERROR_KINDS = ("timeout", "connect", "no_answer", "invalid_body")
