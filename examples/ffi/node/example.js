// mnemo from Node.js with koffi (npm install koffi): docs/other-languages.md.
// Run: node example.js (libmnemo.so.0 where the dynamic loader finds it).
const koffi = require('koffi');

const lib = koffi.load('libmnemo.so.0'); // the SONAME, not the build tree's libmnemo.so
for (const name of ['mnemo_backend', 'mnemo_instance', 'mnemo_user', 'mnemo_database'])
  koffi.opaque(name);
koffi.alias('mnemo_status', 'int32_t');
// Owned out-strings: koffi copies them into JS strings (decoding UTF-8), then hands each
// pointer to mnemo_string_free.
const stringFree = lib.func('void mnemo_string_free(void *s)');
koffi.disposable('mnemo_str', 'str', stringFree);

const fn = (decl) => lib.func(decl);
const lastError = fn('const char *mnemo_last_error_message(void)');
const backendOpen = fn('mnemo_status mnemo_backend_open(const char *url, _Out_ mnemo_backend **out)');
const instanceOpen = fn('mnemo_status mnemo_instance_open(mnemo_backend *b, _Out_ mnemo_instance **out)');
const createUser = fn('mnemo_status mnemo_instance_create_user(mnemo_instance *i, const char *name, const char *pw)');
const login = fn('mnemo_status mnemo_instance_login(mnemo_instance *i, const char *name, const char *pw, _Out_ mnemo_user **out)');
const createDb = fn('mnemo_status mnemo_user_create_db(mnemo_user *u, const char *name, _Out_ mnemo_database **out)');
const dbSet = fn('mnemo_status mnemo_db_set(mnemo_database *d, const char *store, const char *key, const char *json)');
const dbGet = fn('mnemo_status mnemo_db_get(mnemo_database *d, const char *store, const char *key, _Out_ mnemo_str *out)');
const dbFree = fn('void mnemo_db_free(mnemo_database *d)');
const logout = fn('mnemo_status mnemo_user_logout(mnemo_user *u)');
const instanceFree = fn('void mnemo_instance_free(mnemo_instance *i)');
const MNEMO_STATUS_OK = 0, MNEMO_STATUS_NOT_FOUND = 2;

// Every status-returning call, then (same thread: koffi's synchronous calls run on this one)
// the thread's message.
function check(status) {
  if (status !== MNEMO_STATUS_OK) throw new Error(`mnemo status ${status}: ${lastError()}`);
}

const backend = [null], inst = [null], user = [null], db = [null], value = [null];
check(backendOpen('memory:', backend));
check(instanceOpen(backend[0], inst)); // consumes the backend
check(createUser(inst[0], 'zoë', null)); // JS strings cross as UTF-8
check(login(inst[0], 'zoë', null, user));
check(createDb(user[0], 'notes', db));
check(dbSet(db[0], 'todo', 'milk', JSON.stringify({ done: false, by: 'zoë' })));
check(dbGet(db[0], 'todo', 'milk', value));
console.log('get:', JSON.parse(value[0]));

const status = dbGet(db[0], 'todo', 'bread', value);
if (status !== MNEMO_STATUS_NOT_FOUND) throw new Error(`expected NOT_FOUND, got ${status}`);
console.log('missing key:', status, lastError());

dbFree(db[0]);
check(logout(user[0]));
instanceFree(inst[0]);
console.log('node + koffi: ok');
