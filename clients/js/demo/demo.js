// placeholder until the client is built
