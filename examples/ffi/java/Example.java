// mnemo from Java 17 with JNA (Debian: libjna-java): docs/other-languages.md.
// Run: java -cp /usr/share/java/jna.jar Example.java (libmnemo.so.0 where the loader finds it).
import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import java.util.Map;

public class Example {
    static final int MNEMO_STATUS_OK = 0, MNEMO_STATUS_NOT_FOUND = 2;

    // JNA encodes String arguments with jna.encoding, else the locale's charset ("zoë" is
    // sent as "zo?" under LANG=C); OPTION_STRING_ENCODING below only decodes what comes
    // back. So set jna.encoding before JNA loads (or run java -Djna.encoding=UTF-8)...
    static {
        System.setProperty("jna.encoding", "UTF-8");
    }

    // Handles are Pointer; mnemo_status is int; C bool would be byte (JNA's boolean is 4 bytes).
    public interface Mnemo extends Library {
        // By SONAME; returned strings decoded as UTF-8.
        Mnemo LIB = Native.load("libmnemo.so.0", Mnemo.class,
                Map.of(Library.OPTION_STRING_ENCODING, "UTF-8"));

        String mnemo_last_error_message();
        void mnemo_string_free(Pointer s);
        int mnemo_backend_open(String url, PointerByReference out);
        int mnemo_instance_open(Pointer backend, PointerByReference out);
        int mnemo_instance_create_user(Pointer inst, String name, String password);
        int mnemo_instance_login(Pointer inst, String name, String password, PointerByReference out);
        int mnemo_user_create_db(Pointer user, String name, PointerByReference out);
        int mnemo_db_set(Pointer db, String store, String key, String json);
        int mnemo_db_get(Pointer db, String store, String key, PointerByReference outJson);
        void mnemo_db_free(Pointer db);
        int mnemo_user_logout(Pointer user);
        void mnemo_instance_free(Pointer inst);
    }

    static final Mnemo M = Mnemo.LIB;

    // JNA calls run on the calling Java thread: read the message right after, on it.
    static void check(int status) {
        if (status != MNEMO_STATUS_OK)
            throw new IllegalStateException("mnemo status " + status + ": " + M.mnemo_last_error_message());
    }

    // Copies an owned out-string, then frees it with mnemo_string_free.
    static String take(PointerByReference out) {
        Pointer p = out.getValue();
        try {
            return p.getString(0, "UTF-8");
        } finally {
            M.mnemo_string_free(p);
        }
    }

    public static void main(String[] args) {
        // ...and check it took (it does not if JNA was loaded before this class).
        if (!Native.getDefaultStringEncoding().equals("UTF-8"))
            throw new IllegalStateException("JNA encodes strings as " + Native.getDefaultStringEncoding());
        PointerByReference backend = new PointerByReference(), inst = new PointerByReference(),
                user = new PointerByReference(), db = new PointerByReference(), out = new PointerByReference();
        check(M.mnemo_backend_open("memory:", backend));
        check(M.mnemo_instance_open(backend.getValue(), inst)); // consumes the backend
        // "zo\u00eb": escaped, so javac reads this file the same under any locale.
        check(M.mnemo_instance_create_user(inst.getValue(), "zo\u00eb", null));
        check(M.mnemo_instance_login(inst.getValue(), "zo\u00eb", null, user));
        check(M.mnemo_user_create_db(user.getValue(), "notes", db));
        check(M.mnemo_db_set(db.getValue(), "todo", "milk", "{\"done\": false, \"by\": \"zo\u00eb\"}"));
        check(M.mnemo_db_get(db.getValue(), "todo", "milk", out));
        String value = take(out);
        if (!value.equals("{\"by\":\"zo\u00eb\",\"done\":false}"))
            throw new IllegalStateException("not UTF-8 both ways: " + value);
        System.out.println("get: the value came back, UTF-8 both ways");

        int status = M.mnemo_db_get(db.getValue(), "todo", "bread", out);
        if (status != MNEMO_STATUS_NOT_FOUND) throw new IllegalStateException("expected NOT_FOUND: " + status);
        System.out.println("missing key: " + status + " " + M.mnemo_last_error_message());

        M.mnemo_db_free(db.getValue());
        check(M.mnemo_user_logout(user.getValue()));
        M.mnemo_instance_free(inst.getValue());
        System.out.println("java + jna: ok");
    }
}
