// The Express side of persession's express-session interoperability tests
// (tests/test_express_interop.py, started by tests/_node.py).
//
// express-session with connect-redis or connect-mongo, configured by the
// environment; its routes mirror tests/apps/express_compat_app.py:
//
//   /login?user=     regenerate, then req.session.passport = {user} (passport's shape);
//                    &maxAgeMs= sets this session's cookie.maxAge ("null": a browser-session cookie)
//   /whoami          {user, session (without its cookie), id}
//   /set?key=&value= req.session[key] = value
//   /counter         req.session.counter += 1
//   /logout          req.session.destroy()
//   /sign?value=     cookie-signature's sign(value, SECRETS[i]) (i = ?secret=, default 0)
//   /unsign?value=   cookie-signature's unsign(value, secret) for each secret: the value, or false
//   /versions        {package: version} of the packages this process loaded
//
// One app.js for every install: NODE_PROJECT names the directory whose
// node_modules the packages come from (default: this one), so tests/node and
// tests/node/connect-redis9-mongo6 run the same routes on their own versions.
//
// Environment: PORT, NODE_PROJECT, SECRETS (a JSON array, newest first), STORE
// (redis | mongo), REDIS_URL, REDIS_PREFIX, DISABLE_TTL ("1": connect-redis'
// disableTTL), MONGO_URL, MONGO_DB, COOKIE_NAME, ROLLING ("1" for rolling
// sessions), MAX_AGE_MS (cookie.maxAge; "null" for a browser-session cookie),
// COOKIE (a JSON object of more express-session cookie options: domain,
// secure, sameSite, partitioned, path, httpOnly).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { createRequire } = require("node:module");

const env = process.env;
const project = path.resolve(env.NODE_PROJECT || __dirname);
// require() as if from the install's own directory, not from this file's.
const load = createRequire(path.join(project, "package.json"));

const express = load("express");
const session = load("express-session");
const signature = load("cookie-signature");

const secrets = JSON.parse(env.SECRETS || '["test-secret"]');
const maxAge = env.MAX_AGE_MS === "null" ? null : Number(env.MAX_AGE_MS || 14 * 24 * 3600 * 1000);
const cookieOptions = { maxAge, httpOnly: true, sameSite: "lax", secure: false, path: "/", ...JSON.parse(env.COOKIE || "{}") };

// connect-mongo 5 exports the class itself; 6 exports { MongoStore } (and no create() on the module).
function mongoStoreClass(exported) {
  return typeof exported.create === "function" ? exported : exported.MongoStore;
}

async function makeStore() {
  if (env.STORE === "redis") {
    const { createClient } = load("redis");
    const { RedisStore } = load("connect-redis");
    const client = createClient({ url: env.REDIS_URL });
    client.on("error", (error) => console.error("redis:", error.message));
    await client.connect();
    return new RedisStore({ client, prefix: env.REDIS_PREFIX || "sess:", disableTTL: env.DISABLE_TTL === "1" });
  }
  if (env.STORE === "mongo") {
    const MongoStore = mongoStoreClass(load("connect-mongo"));
    const store = MongoStore.create({ mongoUrl: env.MONGO_URL, dbName: env.MONGO_DB, collectionName: "sessions" });
    // A get waits for the connection and connect-mongo's createIndex: listen only once both worked,
    // so a database that refuses the index stops the app here instead of failing every request.
    await new Promise((resolve, reject) => store.get("startup-probe", (error) => (error ? reject(error) : resolve())));
    return store;
  }
  throw new Error(`STORE must be redis or mongo, not ${env.STORE}`);
}

function versionOf(name) {
  // Some packages export no package.json: walk up from the file require() resolves.
  let dir = path.dirname(load.resolve(name));
  for (;;) {
    const file = path.join(dir, "package.json");
    if (fs.existsSync(file)) {
      const manifest = JSON.parse(fs.readFileSync(file, "utf8"));
      if (manifest.name === name) return manifest.version;
    }
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
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
      cookie: cookieOptions,
    }),
  );
  app.get("/login", (req, res, next) => {
    req.session.regenerate((error) => {
      if (error) return next(error);
      if (req.query.maxAgeMs !== undefined) {
        req.session.cookie.maxAge = req.query.maxAgeMs === "null" ? null : Number(req.query.maxAgeMs);
      }
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
  app.get("/versions", (req, res) => {
    const names = Object.keys(JSON.parse(fs.readFileSync(path.join(project, "package.json"), "utf8")).dependencies);
    res.json(Object.fromEntries(names.map((name) => [name, versionOf(name)])));
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
