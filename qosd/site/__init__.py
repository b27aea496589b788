"""The site channel: qosd agents behind one uplink share what they know (README, "A site")."""
