// Rebuild when a migration is added: `sqlx::migrate!` embeds the migrations folder, and cargo
// does not otherwise watch it (sqlx's own advice).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
