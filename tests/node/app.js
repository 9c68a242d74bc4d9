// The Express side of persession's express-session interoperability tests
// (tests/test_express_interop.py, started by tests/_node.py).
//
// express-session with connect-redis or connect-mongo, configured by the
// environment; its routes mirror tests/apps/express_compat_app.py:
//
//   /login?user=     regenerate, then req.session.passport = {user} (passport's shape)
//   /whoami          {user, session (without its cookie), id}
//   /set?key=&value= req.session[key] = value
//   /counter         req.session.counter += 1
//   /logout          req.session.destroy()
//   /sign?value=     cookie-signature's sign(value, SECRETS[i]) (i = ?secret=, default 0)
//   /unsign?value=   cookie-signature's unsign(value, secret) for each secret: the value, or false
//
// Environment: PORT, SECRETS (a JSON array, newest first), STORE (redis |
// mongo), REDIS_URL, REDIS_PREFIX, MONGO_URL, MONGO_DB, COOKIE_NAME, ROLLING
// ("1" for rolling sessions), MAX_AGE_MS (cookie.maxAge; "null" for a
// browser-session cookie).
"use strict";

const express = require("express");
const session = require("express-session");
const signature = require("cookie-signature");

const env = process.env;
const secrets = JSON.parse(env.SECRETS || '["test-secret"]');
const maxAge = env.MAX_AGE_MS === "null" ? null : Number(env.MAX_AGE_MS || 14 * 24 * 3600 * 1000);

async function makeStore() {
  if (env.STORE === "redis") {
    const { createClient } = require("redis");
    const { RedisStore } = require("connect-redis");
    const client = createClient({ url: env.REDIS_URL });
    client.on("error", (error) => console.error("redis:", error.message));
    await client.connect();
    return new RedisStore({ client, prefix: env.REDIS_PREFIX || "sess:" });
  }
  if (env.STORE === "mongo") {
    const MongoStore = require("connect-mongo");
    return MongoStore.create({ mongoUrl: env.MONGO_URL, dbName: env.MONGO_DB, collectionName: "sessions" });
  }
  throw new Error(`STORE must be redis or mongo, not ${env.STORE}`);
}

function data(sess) {
  const copy = { ...sess };
  delete copy.cookie;
  return copy;
}

function done(res, next, payload) {
  return (error) => (error ? next(error) : res.json(payload));
}

async function main() {
  const app = express();
  app.use(
    session({
      name: env.COOKIE_NAME || "connect.sid",
      secret: secrets,
      store: await makeStore(),
      resave: false,
      saveUninitialized: false,
      rolling: env.ROLLING === "1",
      cookie: { maxAge, httpOnly: true, sameSite: "lax", secure: false, path: "/" },
    }),
  );
  app.get("/login", (req, res, next) => {
    req.session.regenerate((error) => {
      if (error) return next(error);
      req.session.passport = { user: req.query.user };
      req.session.save(done(res, next, { user: req.query.user }));
    });
  });
  app.get("/whoami", (req, res) => {
    const passport = req.session.passport || {};
    res.json({ user: passport.user === undefined ? null : passport.user, session: data(req.session), id: req.sessionID });
  });
  app.get("/set", (req, res) => {
    req.session[req.query.key] = req.query.value === undefined ? "" : req.query.value;
    res.json({ ok: true });
  });
  app.get("/counter", (req, res) => {
    req.session.counter = (req.session.counter || 0) + 1;
    res.json({ counter: req.session.counter });
  });
  app.get("/logout", (req, res, next) => {
    req.session.destroy(done(res, next, { ok: true }));
  });
  app.get("/sign", (req, res) => {
    res.json({ signed: signature.sign(req.query.value, secrets[Number(req.query.secret || 0)]) });
  });
  app.get("/unsign", (req, res) => {
    res.json({ results: secrets.map((secret) => signature.unsign(req.query.value, secret)) });
  });
  app.use((error, req, res, next) => {
    console.error(error);
    res.status(500).json({ error: String(error && error.message) });
  });
  const server = app.listen(Number(env.PORT), "127.0.0.1");
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
