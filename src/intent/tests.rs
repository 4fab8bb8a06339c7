//! The matcher against the fixture house (tests/fixtures/house.json).

use super::*;
use serde_json::Value;

pub(crate) fn house() -> (tempfile::TempDir, Registry) {
    let d = tempfile::tempdir().unwrap();
    let r = Registry::open(&d.path().join("devices.redb"), "hearth").unwrap();
    let fx: Value = serde_json::from_str(include_str!("../../tests/fixtures/house.json")).unwrap();
    for e in fx["entities"].as_array().unwrap() {
        let ent = crate::mqtt::discovery::parse(
            "homeassistant",
            e["topic"].as_str().unwrap(),
            e["payload"].to_string().as_bytes(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ent.id, e["id"].as_str().unwrap());
        r.upsert(ent).unwrap();
    }
    for e in fx["entities"].as_array().unwrap() {
        if let Some(st) = e["state"].as_array() {
            r.on_state(st[0].as_str().unwrap(), st[1].as_str().unwrap(), 1);
        }
    }
    r.set_aliases([(
        "light.kitchen_ceiling".to_string(),
        vec!["big light".to_string()],
    )]);
    (d, r)
}

fn calls(p: &Plan) -> Vec<String> {
    match p {
        Plan::Act { steps, .. } => steps
            .iter()
            .map(|s| {
                let a = &s.args;
                match a.get("action") {
                    Some(act) => match a.get("value") {
                        Some(v) => format!(
                            "{} {} {}",
                            a["entity"].as_str().unwrap(),
                            act.as_str().unwrap(),
                            v
                        ),
                        None => format!(
                            "{} {}",
                            a["entity"].as_str().unwrap(),
                            act.as_str().unwrap()
                        ),
                    },
                    None => format!(
                        "{} {}?",
                        a["entity"].as_str().unwrap(),
                        s.ask.as_deref().unwrap_or("state")
                    ),
                }
            })
            .collect(),
        Plan::Ambiguous { .. } => vec!["ambiguous".into()],
        Plan::Say(s) => vec![format!("say: {s}")],
        Plan::NoMatch => vec![],
    }
}

#[test]
fn commands_become_tool_calls() {
    let (_d, r) = house();
    let i = Intents::default();
    let c = |t: &str| calls(&i.plan(&r, t));
    assert_eq!(
        c("turn off the kitchen ceiling light"),
        ["light.kitchen_ceiling turn_off"]
    );
    assert_eq!(
        c("Switch the big light on please"),
        ["light.kitchen_ceiling turn_on"]
    );
    assert_eq!(c("kill the hallway light"), ["light.hallway turn_off"]);
    assert_eq!(
        c("dim the bedroom lamp to thirty percent"),
        ["light.bedroom_lamp set_brightness 30.0"]
    );
    assert_eq!(
        c("set the bedroom fan to 40%"),
        ["fan.bedroom_fan set_percentage 40.0"]
    );
    assert_eq!(
        c("set the living room blind to 25 percent"),
        ["cover.living_room_blind set_position 25.0"]
    );
    assert_eq!(
        c("set the thermostat to 21.5 degrees"),
        ["climate.hallway_thermostat set_temperature 21.5"]
    );
    assert_eq!(
        c("set the thermostat to heat"),
        ["climate.hallway_thermostat set_mode \"heat\""]
    );
    assert_eq!(c("close the bedroom blind"), ["cover.bedroom_blind close"]);
    assert_eq!(c("activate movie night"), ["scene.movie_night activate"]);
    assert_eq!(
        c("turn on the garden lights"),
        ["switch.garden_lights turn_on"]
    );
    assert_eq!(
        c("turn off the kichen ceiling light"),
        ["light.kitchen_ceiling turn_off"]
    );
    let mut all = c("turn everything off in the kitchen");
    all.sort();
    assert_eq!(
        all,
        [
            "light.kitchen_ceiling turn_off",
            "light.kitchen_counter turn_off",
            "switch.coffee_machine turn_off"
        ]
    );
    let mut lights = c("turn off the living room lights");
    lights.sort();
    assert_eq!(
        lights,
        [
            "light.living_room_ceiling turn_off",
            "light.living_room_lamp turn_off"
        ]
    );
    // high-risk devices go through the tool (and its approval) one by one
    assert_eq!(c("unlock the front door"), ["lock.front_door_lock unlock"]);
    assert_eq!(c("open the garage door"), ["cover.garage_door open"]);
    // German
    assert_eq!(
        c("Schalte das Hallway light aus"),
        ["light.hallway turn_off"]
    );
    assert_eq!(
        c("dimme die bedroom lamp auf fünfzig prozent"),
        ["light.bedroom_lamp set_brightness 50.0"]
    );
}

#[test]
fn questions_read_the_right_device() {
    let (_d, r) = house();
    let i = Intents::default();
    let c = |t: &str| calls(&i.plan(&r, t));
    assert_eq!(
        c("is the front door locked?"),
        ["lock.front_door_lock locked?"]
    );
    // a question about being open prefers the contact over the lock
    assert_eq!(
        c("is the front door open?"),
        ["binary_sensor.front_door_contact open?"]
    );
    assert_eq!(
        c("what's the temperature outside?"),
        ["sensor.outdoor_temperature temperature?"]
    );
    assert_eq!(
        c("how humid is it outside"),
        ["sensor.outdoor_humidity humidity?"]
    );
    assert_eq!(
        c("what is the temperature in the living room"),
        ["sensor.living_room_temperature temperature?"]
    );
    // no sensor in the hallway: the thermostat's reading
    assert_eq!(
        c("how warm is it in the hallway"),
        ["climate.hallway_thermostat temperature?"]
    );
    assert_eq!(c("is the coffee machine on"), ["switch.coffee_machine on?"]);
}

#[test]
fn what_is_not_for_the_matcher_goes_to_the_model() {
    let (_d, r) = house();
    let i = Intents::default();
    // "swich on …" once matched German "{name} (an|ein)" ("ein" is a skip word)
    for t in [
        "I'm cold",
        "tell me a joke",
        "turn off the toaster",
        "what should I cook tonight",
        "/status",
        "turn it off",
        "swich on the coffee machine",
        // ordinary chat that shares words with commands
        "what is the plan for today",
        "turn the page",
        "I am off to work",
        "the game is on tonight",
        "don't turn off the kitchen ceiling light",
        "remind me at 7 to turn off the kitchen ceiling light",
        "set an alarm for 7",
        "stop",
        "start over",
        "is dinner ready",
        "what is the time",
    ] {
        assert_eq!(i.plan(&r, t), Plan::NoMatch, "{t}");
    }
    // two lamps, in two rooms
    assert!(
        matches!(i.plan(&r, "turn on the lamp"), Plan::Ambiguous { note: n, question: q } if n.contains("light.living_room_lamp") && n.contains("light.bedroom_lamp") && q.starts_with("Which one"))
    );
}

#[test]
fn replies_say_what_happened() {
    let (_d, r) = house();
    let i = Intents::default();
    let Plan::Act { lang, steps } = i.plan(&r, "turn off the kitchen ceiling light") else {
        panic!()
    };
    let ok = (true, r#"{"confirmed": true}"#.to_string());
    assert_eq!(
        i.reply(lang, &steps, &[ok]),
        "Kitchen ceiling light is off. (Handled on this device, no model.)"
    );
    let late = (true, r#"{"confirmed": false}"#.to_string());
    assert!(i
        .reply(lang, &steps, &[late])
        .starts_with("I sent the command to Kitchen ceiling light, but it has not confirmed yet."));
    let refused = (
        false,
        "error: lock.front_door_lock is a high-risk device".to_string(),
    );
    assert!(i.reply(lang, &steps, &[refused]).contains(
        "could not operate Kitchen ceiling light: lock.front_door_lock is a high-risk device"
    ));
    // a question, answered from the device's state as device_state gives it
    let answer = |text: &str, id: &str| {
        let Plan::Act { lang, steps } = i.plan(&r, text) else {
            panic!("{text}")
        };
        let st = r.get(id).unwrap().describe().to_string();
        i.reply(lang, &steps, &[(true, st)])
    };
    let a = answer("is the front door locked", "lock.front_door_lock");
    assert!(a.starts_with("Yes, Front door lock is locked."), "{a}");
    let a = answer(
        "what's the temperature outside",
        "sensor.outdoor_temperature",
    );
    assert!(a.starts_with("Outdoor Temperature reads 7.5°C."), "{a}");
    let a = answer(
        "ist die Front door lock abgeschlossen",
        "lock.front_door_lock",
    );
    assert!(
        a.starts_with("Ja, Front door lock ist abgeschlossen."),
        "{a}"
    );
}

#[test]
fn a_language_file_in_the_state_dir_adds_a_language() {
    let d = tempfile::tempdir().unwrap();
    let fr = include_str!("lang/en.toml")
        .replace("language = \"en\"", "language = \"fr\"")
        .replace(
            "\"(turn|switch|shut|power|flip) off {name}\",",
            "\"éteins {name}\",",
        );
    std::fs::write(d.path().join("fr.toml"), fr).unwrap();
    std::fs::write(d.path().join("broken.toml"), "language = ").unwrap();
    let i = Intents::load(Some(d.path()));
    assert_eq!(i.languages(), ["en", "de", "fr"]);
    let (_d, r) = house();
    assert_eq!(
        calls(&i.plan(&r, "éteins the hallway light")),
        ["light.hallway turn_off"]
    );
}
