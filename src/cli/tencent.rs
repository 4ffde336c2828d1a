//! `roomsync tencent check` and `configure`: each app's callback configuration at Tencent,
//! through `setup`. Their exit statuses are their own (1 a finding or a refusal, 2 not asked).

use std::process::ExitCode;

use clap::Subcommand;

use crate::{
    config::Config,
    setup::{self, Selection},
    telemetry,
    tencent::TencentClient,
};

#[derive(Subcommand)]
pub(super) enum TencentAction {
    /// Compare each app's callback configuration with what roomsync handles and with
    /// PUBLIC_CALLBACK_URL; one line per finding. Exit 0: all right; 1: a finding; 2: Tencent
    /// could not be asked (network, key or UserSig), or no TENCENT_SECRET_KEY.
    Check {
        /// Only this app (default: every app with a key).
        #[arg(long)]
        app: Option<i64>,
        /// The products to check. A product without configuration is a finding when named
        /// here, or when the app has neither.
        #[arg(long, value_enum, default_value_t = ProductArg::Both)]
        product: ProductArg,
    },
    /// Point the callbacks at PUBLIC_CALLBACK_URL and switch on every command roomsync
    /// handles (set_callback when there is no configuration, else update_callback); commands
    /// already on stay on. Prints what changes. Exit 0: done; 1: Tencent refused the change;
    /// 2: Tencent could not be asked, or PUBLIC_CALLBACK_URL or TENCENT_SECRET_KEY is unset.
    Configure {
        /// Only this app (default: every app with a key).
        #[arg(long)]
        app: Option<i64>,
        /// The products to configure.
        #[arg(long, value_enum, default_value_t = ProductArg::Room)]
        product: ProductArg,
        /// Print what would change; send nothing but the reads.
        #[arg(long)]
        dry_run: bool,
    },
}

/// TUIRoomKit (`room`), TUILiveKit (`live`), or both.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum ProductArg {
    Room,
    Live,
    Both,
}

impl From<ProductArg> for Selection {
    fn from(arg: ProductArg) -> Self {
        match arg {
            ProductArg::Room => Self::Room,
            ProductArg::Live => Self::Live,
            ProductArg::Both => Self::Both,
        }
    }
}

pub(super) async fn tencent(config: &Config, action: TencentAction) -> ExitCode {
    let not_asked = |message: &str| {
        eprintln!("roomsync: {message}");
        ExitCode::from(setup::EXIT_NOT_ASKED)
    };
    let Some(drift) = &config.drift_repair else {
        return not_asked(
            "Tencent's REST API needs credentials: set TENCENT_SECRET_KEY (and TENCENT_API_BASE for the app's region)",
        );
    };
    let client = match TencentClient::new(drift) {
        Ok(client) => client,
        Err(e) => return not_asked(&telemetry::error_chain(&e)),
    };
    let (app, selection) = match &action {
        TencentAction::Check { app, product } | TencentAction::Configure { app, product, .. } => {
            (*app, Selection::from(*product))
        }
    };
    let apps = match setup::apps(&client, app) {
        Ok(apps) => apps,
        Err(message) => return not_asked(&message),
    };
    let ours = config.public_callback_url.as_ref();
    let code = match action {
        TencentAction::Check { .. } => {
            let signed = config.callback_token.is_some();
            let report = setup::check(&client, &apps, selection, ours, signed).await;
            println!("{report}");
            report.exit_code()
        }
        TencentAction::Configure { dry_run, .. } => {
            let Some(ours) = ours else {
                return not_asked(
                    "configure needs PUBLIC_CALLBACK_URL: the https:// URL at which Tencent reaches roomsync's /callback",
                );
            };
            let report = setup::configure(&client, &apps, selection, ours, dry_run).await;
            println!("{report}");
            report.exit_code()
        }
    };
    ExitCode::from(code)
}
