"""Delivery over HTTP, one module per audience: `links` (the pages behind the links in
messages, and the tracked links and open-counting image: no login, a signed token),
`consent` (admin: subscriptions and the suppression list) and `messages` (admin: messages and
their status history). Provider webhooks: service.delivery.webhooks."""
